"""A channel's name in a request: one that the channel registry knows
(``notifier.channels.registry``). The JSON Schema lists the registered names as an enum, read
from the registry when the document is made, so a channel added there is accepted and
documented with no change here."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from notifier.channels.registry import CHANNELS


def _expected() -> str:
    quoted = [repr(name) for name in CHANNELS.names]
    return " or ".join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else quoted[0]


class _Listed:
    """Documents a channel name as one of the registered ones (an enum in the JSON Schema)."""

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["enum"] = list(CHANNELS.names)
        return json_schema


class _Registered(_Listed):
    """...and refuses any other."""

    def check(self, value: str) -> str:
        if value not in CHANNELS:
            # As an enum refuses a value, so the error reads as it did when this was one.
            raise PydanticCustomError(
                "enum", "Input should be {expected}", {"expected": _expected()}
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))


# A channel a request names: refused unless registered.
ChannelName = Annotated[str, _Registered()]
# A channel a stored notification has: shown as it is (a row outlives a channel's removal).
StoredChannelName = Annotated[str, _Listed()]


def channel_list_schema(schema: dict[str, Any]) -> None:
    """A list of channels, each once: at most as many as there are."""
    schema["uniqueItems"] = True
    schema["maxItems"] = len(CHANNELS)
