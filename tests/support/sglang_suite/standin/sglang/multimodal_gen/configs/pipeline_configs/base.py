"""Stand-in: the task and data types, which the real module re-exports from the wheel's own task_type.py."""

from sglang.multimodal_gen.configs.task_type import DataType, ModelTaskType  # noqa: F401
