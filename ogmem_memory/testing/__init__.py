"""Test support shipped with the package: the store conformance suite and fakes.

Third-party stores run the same suite as ours::

    from ogmem_memory.testing import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self):
            with MyStore(...) as s:
                yield s
"""

from ogmem_memory.testing.conformance import StoreConformance
from ogmem_memory.testing.fakes import BlockingCompressor, FailingCompressor, ScriptedLLM

__all__ = ["BlockingCompressor", "FailingCompressor", "ScriptedLLM", "StoreConformance"]
