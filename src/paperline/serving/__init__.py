"""Models-from-code files that MLflow executes when it logs or serves a model (they import MLflow and the model
library, never paperline): the serving side of a registered model, outside the training core."""
