"""Built-in random transforms (one module each), registered like any third-party plugin."""
