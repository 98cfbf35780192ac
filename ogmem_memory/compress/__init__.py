"""Compression of archived conversation turns into an overview and a one-line abstract.

Standard library only: no framework is imported here, the LLM compressor duck-types its model.
"""

from ogmem_memory.compress.base import (
    CompressionOutcome,
    Compressor,
    StrictCompressor,
    compress_with_fallback,
    run_compression,
    validate_output,
)
from ogmem_memory.compress.extractive import ExtractiveCompressor, TemplateCompressor
from ogmem_memory.compress.llm import LLMCompressor
from ogmem_memory.compress.merger import ArchiveLike, ArchiveMerger, MergedArchive
from ogmem_memory.compress.quality import CompressionQualityEvaluator

__all__ = [
    "ArchiveLike",
    "ArchiveMerger",
    "CompressionOutcome",
    "CompressionQualityEvaluator",
    "Compressor",
    "ExtractiveCompressor",
    "LLMCompressor",
    "MergedArchive",
    "StrictCompressor",
    "TemplateCompressor",
    "compress_with_fallback",
    "run_compression",
    "validate_output",
]
