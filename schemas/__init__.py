"""The contract between `curator` and `trainer`: table schemas, ids, references, validation, set reading.

Imports nothing of ours.
"""

from schemas.errors import (  # noqa: F401
    AudioError,
    CuratorError,
    MixedModelsError,
    ModelError,
    ParameterError,
    RefError,
    SchemaError,
    StoreError,
    TrainingError,
)
from schemas.refs import Ref, parse_ref  # noqa: F401
