"""ogmem chat memory for LlamaIndex: ``OgmemChatMemoryBuffer`` and ``OgmemChatStore``.

Install with ``pip install "ogmem-memory[llama-index]"``.
"""

from llama_index.memory.ogmem.buffer import OgmemChatMemoryBuffer
from llama_index.memory.ogmem.chat_store import OgmemChatStore
from llama_index.memory.ogmem.convert import MessageTypeError

__all__ = ["MessageTypeError", "OgmemChatMemoryBuffer", "OgmemChatStore"]
