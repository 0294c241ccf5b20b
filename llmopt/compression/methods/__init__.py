"""The built-in compression methods; importing this package registers every one of them."""

from llmopt.compression.methods import (  # noqa: F401 - each module registers its method
    asvd,
    gptq,
    int8,
    magnitude,
    rtn,
    sparsegpt,
    svd,
    wanda,
)
