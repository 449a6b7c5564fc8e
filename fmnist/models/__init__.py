"""Pure nn.Module definitions, registered by name. Importing this package registers them all."""

from fmnist.models import mlp, small_cnn  # noqa: F401  (registration side effects)
from fmnist.models.init import init_weights
from fmnist.models.registry import (UnknownModelError, check_model_options, create_model, list_models,
                                    register_model)

__all__ = ["create_model", "list_models", "register_model", "init_weights", "UnknownModelError", "check_model_options"]
