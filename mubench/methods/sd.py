"""``sd``: the base model as is."""
from __future__ import annotations


from ..models.base import ModelBundle
from .base import Method, MethodContext, Prepared
from .params import SDParams


class BaseModelMethod(Method):
    Params = SDParams

    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> Prepared:
        return Prepared(bundle.denoiser, info={"change": "none"})
