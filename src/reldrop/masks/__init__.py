"""Pure mask functions: draw occlusion masks from relevance. No model involved; only torch."""
from .image import random_erase, relevance_erase
from .points import relevance_point_drop

__all__ = ["relevance_erase", "random_erase", "relevance_point_drop"]
