"""What on-call engineers see: the live status view, its advice, and the state metrics."""
