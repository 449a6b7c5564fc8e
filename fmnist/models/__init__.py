"""Models registered by name: nn.Modules and scikit-learn baselines. Importing this package registers them all."""

from fmnist.models import (baselines, mlp, mobile, resnets, shakeshake, small_cnn, speedrun, transfer,  # noqa: F401
                           wide_resnet)
from fmnist.models.init import init_weights
from fmnist.models.registry import (ModelInfo, UnknownModelError, check_model_options, create_model, list_models,
                                    model_info,
                                    register_model)

__all__ = ["create_model", "list_models", "model_info", "ModelInfo", "register_model", "init_weights", "UnknownModelError", "check_model_options"]
