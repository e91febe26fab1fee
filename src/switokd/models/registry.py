from ..registry import Registry

MODELS: Registry = Registry("model")
