"""What the edge and the server must agree on: points and measurement schema, windowing/features, bundle manifest."""
