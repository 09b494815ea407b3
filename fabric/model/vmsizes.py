"""Cloud Services VM sizes: how many cores and how much memory each `vmsize` name gives."""

from __future__ import annotations

import msgspec


class VmSize(msgspec.Struct, frozen=True):
    """The capacity of one role instance."""

    cores: int
    memory_mb: int


class UnknownVmSizeError(ValueError):
    """A `vmsize` that is not in the table."""


def _gb(cores: int, gib: float) -> VmSize:
    return VmSize(cores, int(gib * 1024))


_CLASSIC = {
    "ExtraSmall": VmSize(1, 768),  # a shared core; placement counts it as one
    "Small": _gb(1, 1.75),
    "Medium": _gb(2, 3.5),
    "Large": _gb(4, 7),
    "ExtraLarge": _gb(8, 14),
}
VM_SIZES: dict[str, VmSize] = {
    **_CLASSIC,
    # A0-A4 are the same machines as ExtraSmall-ExtraLarge under their newer names.
    **{f"A{i}": size for i, size in enumerate(_CLASSIC.values())},
    **{f"Standard_A{i}": size for i, size in enumerate(_CLASSIC.values())},
    "A5": _gb(2, 14),
    "A6": _gb(4, 28),
    "A7": _gb(8, 56),
    "A8": _gb(8, 56),
    "A9": _gb(16, 112),
    "A10": _gb(8, 56),
    "A11": _gb(16, 112),
    "Standard_A1_v2": _gb(1, 2),
    "Standard_A2_v2": _gb(2, 4),
    "Standard_A4_v2": _gb(4, 8),
    "Standard_A8_v2": _gb(8, 16),
    "Standard_A2m_v2": _gb(2, 16),
    "Standard_A4m_v2": _gb(4, 32),
    "Standard_A8m_v2": _gb(8, 64),
    "Standard_D1": _gb(1, 3.5),
    "Standard_D2": _gb(2, 7),
    "Standard_D3": _gb(4, 14),
    "Standard_D4": _gb(8, 28),
    "Standard_D11": _gb(2, 14),
    "Standard_D12": _gb(4, 28),
    "Standard_D13": _gb(8, 56),
    "Standard_D14": _gb(16, 112),
    "Standard_D1_v2": _gb(1, 3.5),
    "Standard_D2_v2": _gb(2, 7),
    "Standard_D3_v2": _gb(4, 14),
    "Standard_D4_v2": _gb(8, 28),
    "Standard_D5_v2": _gb(16, 56),
    "Standard_D11_v2": _gb(2, 14),
    "Standard_D12_v2": _gb(4, 28),
    "Standard_D13_v2": _gb(8, 56),
    "Standard_D14_v2": _gb(16, 112),
    "Standard_D15_v2": _gb(20, 140),
    "Standard_D2_v3": _gb(2, 8),
    "Standard_D4_v3": _gb(4, 16),
    "Standard_D8_v3": _gb(8, 32),
    "Standard_D16_v3": _gb(16, 64),
    "Standard_D32_v3": _gb(32, 128),
    "Standard_D64_v3": _gb(64, 256),
    "Standard_E2_v3": _gb(2, 16),
    "Standard_E4_v3": _gb(4, 32),
    "Standard_E8_v3": _gb(8, 64),
    "Standard_E16_v3": _gb(16, 128),
    "Standard_E32_v3": _gb(32, 256),
    "Standard_E64_v3": _gb(64, 432),
    "Standard_G1": _gb(2, 28),
    "Standard_G2": _gb(4, 56),
    "Standard_G3": _gb(8, 112),
    "Standard_G4": _gb(16, 224),
    "Standard_G5": _gb(32, 448),
}
_FOLDED = {name.lower(): size for name, size in VM_SIZES.items()}


def vm_size(name: str) -> VmSize:
    """Cores and memory of a `vmsize` name (case-insensitive, as Azure compared them).

    Raises UnknownVmSizeError for a name not in VM_SIZES.
    """
    try:
        return _FOLDED[name.lower()]
    except KeyError:
        raise UnknownVmSizeError(name) from None
