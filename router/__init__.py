"""The engine: pipeline, mapping interpreter, routing, delivery and operator surfaces."""
