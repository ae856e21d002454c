"""Built-in face detectors (judges of "is this a face at all"), one module each."""
