"""Change data capture: sources (binlog, Debezium) -> ChangeEvent -> applier -> MongoDB."""
