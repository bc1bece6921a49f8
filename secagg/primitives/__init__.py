"""The hazmat layer: field vectors, mask PRG, key agreement, AEAD, Shamir,
signatures, commitments.

Each module does one job (after Google's fcp/secagg split); the protocol in ``secagg`` is built
from them. Import the modules directly, e.g. ``from secagg.primitives import shamir``.
"""

from . import aead, commitment, field, key_agreement, prg, shamir, signatures

__all__ = ["aead", "commitment", "field", "key_agreement", "prg", "shamir", "signatures"]
