"""Data: files → conversations → checked → rendered with the model's chat template → split."""

from tuneforge.data.messages import Conversation, Message, RowError
from tuneforge.data.pipeline import PreparedData, load_conversations, prepare_samples, split_validation
from tuneforge.data.quality import DataReport
from tuneforge.data.render import IGNORE_INDEX, RenderedSample, render_conversation

__all__ = [
    "IGNORE_INDEX",
    "Conversation",
    "DataReport",
    "Message",
    "PreparedData",
    "RenderedSample",
    "RowError",
    "load_conversations",
    "prepare_samples",
    "render_conversation",
    "split_validation",
]
