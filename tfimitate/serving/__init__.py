"""Export to SavedModel and talk to TensorFlow Serving."""
