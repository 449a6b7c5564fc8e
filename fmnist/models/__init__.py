"""Models registered by name: nn.Modules and scikit-learn baselines, built by one factory.

Importing this package imports no torch: the registry is a catalog, and each model family's module
is imported when one of its models is built.
"""

from fmnist.core.errors import UnknownModelError
from fmnist.models.registry import ModelInfo, ModelKind, create_model, list_models, model_info, register_model

__all__ = ["create_model", "list_models", "model_info", "ModelInfo", "ModelKind", "register_model",
           "UnknownModelError"]
