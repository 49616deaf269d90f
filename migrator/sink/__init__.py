"""The MongoDB side: connections and the bulk writer."""
