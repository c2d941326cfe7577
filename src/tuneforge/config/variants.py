"""Config sections whose fields depend on a name: `adapter:` (per adapter) and `method:` (per training method).

The parameter classes are declared by the adapters and methods themselves, next to their code, and registered
here when their packages are imported (`import tuneforge.methods` registers every method and every adapter; the
registries import it by name the first time they are asked). The config layer only looks them up by name, so it
never imports the layers above it.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.config.schema import AdapterParams, MethodParams, Section
from tuneforge.registry import Registry

__all__ = ["ADAPTER_PARAMS", "METHOD_PARAMS", "VARIANT_SECTIONS", "VariantSection"]

# the provider registers them when first asked (a plug-in lookup by name, not an import of the layer above)
ADAPTER_PARAMS: Registry[type[AdapterParams]] = Registry("adapter", provider="tuneforge.methods")
METHOD_PARAMS: Registry[type[MethodParams]] = Registry("method", provider="tuneforge.methods")


@dataclass(frozen=True)
class VariantSection:
    """A config section validated against the parameter class registered under its `name` key."""

    key: str
    registry: Registry[type[Section]]
    default: str


VARIANT_SECTIONS: tuple[VariantSection, ...] = (
    VariantSection("adapter", ADAPTER_PARAMS, "lora"),  # type: ignore[arg-type]
    VariantSection("method", METHOD_PARAMS, "sft"),  # type: ignore[arg-type]
)
