"""ogmem memory for LlamaIndex: ``OgmemChatMemoryBuffer``, ``OgmemChatStore`` and ``OgmemMemoryBlock``.

Install with ``pip install "ogmem-memory[llama-index]"``.
"""

from llama_index.memory.ogmem.block import OgmemMemoryBlock
from llama_index.memory.ogmem.buffer import OgmemChatMemoryBuffer
from llama_index.memory.ogmem.chat_store import OgmemChatStore
from llama_index.memory.ogmem.convert import MessageTypeError

__all__ = ["MessageTypeError", "OgmemChatMemoryBuffer", "OgmemChatStore", "OgmemMemoryBlock"]
