"""The canonical model: identifier systems, no-basis facts and JSON Schemas."""
