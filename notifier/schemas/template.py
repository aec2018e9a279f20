"""Template request and response schemas (``PUT/GET/DELETE /v1/templates/{key}``, the list
and the preview)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from notifier.models.notification import NotificationType, Priority
from notifier.schemas.common import (
    STORABLE,
    HttpUrlStr,
    Identifier,
    JsonObject,
    StorableText,
    TextRule,
)
from notifier.templates.definition import (
    MAX_DESCRIPTION_CHARS,
    MAX_LOCALES,
    SOURCE_LIMITS,
    TemplateDefinition,
)
from notifier.templates.locales import MAX_TAG_CHARS, UnusableLocale, canonical_tag

# The template key in a path; digest, throttle and cancellation keys share the pattern.
TEMPLATE_KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


def locale_tag(value: str) -> str:
    try:
        return canonical_tag(value)
    except UnusableLocale as exc:
        raise ValueError(str(exc)) from None


# The shape canonical_tag takes (notifier/templates/locales.py), ``_`` read as ``-``, for the
# document; whether Babel has data for the tag is the validator's to say.
LOCALE_TAG_PATTERN = (
    r"^(?![Uu][Nn][Dd](?:[-_]|$))[A-Za-z]{2,3}(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$"
)
_TAG_SHAPE = TextRule(LOCALE_TAG_PATTERN, "is not a BCP 47 language tag such as en, fr-BE or zh-CN")
LocaleTag = Annotated[
    str, StringConstraints(max_length=MAX_TAG_CHARS), _TAG_SHAPE, AfterValidator(locale_tag)
]


def _length(part: str) -> StringConstraints:
    return StringConstraints(min_length=1, max_length=SOURCE_LIMITS[part])


# STORABLE's rule (no NUL) spelt as a look-ahead for the one part that may be 256 KiB long:
# schemathesis's coverage phase (4.32) finds no value for ``^[^\x00]*$`` with a maxLength above
# ~100k and then sends the operation a body of ``0`` as if it were valid. Same strings either way.
_STORABLE_LONG = TextRule(r"^(?![\s\S]*\x00)", STORABLE.message)


class LocaleParts(BaseModel):
    """One locale's parts: Jinja sources. A channel whose part is absent uses title and
    message (email without ``email_html``: the default layout)."""

    model_config = ConfigDict(extra="forbid")
    title: Annotated[str, _length("title"), STORABLE]
    message: Annotated[str, _length("message"), STORABLE]
    email_subject: Annotated[str, _length("email_subject"), STORABLE] | None = None
    email_html: Annotated[str, _length("email_html"), _STORABLE_LONG] | None = None
    sms: Annotated[str, _length("sms"), STORABLE] | None = None
    push_title: Annotated[str, _length("push_title"), STORABLE] | None = None
    push_body: Annotated[str, _length("push_body"), STORABLE] | None = None

    def sources(self) -> dict[str, str]:
        return self.model_dump(exclude_none=True)


class TemplateUpsert(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Stored as it is: no NUL (PostgreSQL's text has none; a NUL here was a 500).
    description: (
        Annotated[StorableText, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)] | None
    ) = None
    default_locale: LocaleTag = "en"
    locales: Annotated[
        dict[str, LocaleParts],
        Field(
            min_length=1,
            max_length=MAX_LOCALES,
            json_schema_extra={
                "propertyNames": {"pattern": LOCALE_TAG_PATTERN, "maxLength": MAX_TAG_CHARS}
            },
        ),
    ]

    @field_validator("locales", mode="before")
    @classmethod
    def _canonical_locale_keys(cls, value: Any) -> Any:
        """Keys in canonical case; two spellings of one tag (``en-us``, ``en-US``) refused."""
        if not isinstance(value, dict):
            return value
        canonical: dict[str, Any] = {}
        for tag, parts in value.items():
            key = locale_tag(tag) if isinstance(tag, str) else tag
            if key in canonical:
                raise ValueError(f"locale {key!r} is given twice")
            canonical[key] = parts
        return canonical

    @model_validator(mode="after")
    def _default_locale_is_present(self) -> TemplateUpsert:
        if self.default_locale not in self.locales:
            raise ValueError(
                f"default_locale {self.default_locale!r} has no entry in locales "
                f"({', '.join(self.locales)})"
            )
        return self

    def sources(self) -> dict[str, dict[str, str]]:
        return {tag: parts.sources() for tag, parts in self.locales.items()}


class TemplatePublic(BaseModel):
    key: str
    version: int = Field(description="bumped by every PUT; never repeats for a key; 0: built in")
    builtin: bool = Field(description="the built-in template (no stored template overrides it)")
    description: str | None
    default_locale: str
    locales: dict[str, dict[str, str]]
    created_at: AwareDatetime | None = Field(description="null for a built-in")
    updated_at: AwareDatetime | None

    @classmethod
    def from_definition(
        cls,
        definition: TemplateDefinition,
        *,
        created_at: AwareDatetime | None = None,
        updated_at: AwareDatetime | None = None,
    ) -> TemplatePublic:
        return cls(
            key=definition.key,
            version=definition.version,
            builtin=definition.builtin,
            description=definition.description,
            default_locale=definition.default_locale,
            locales={tag: dict(parts) for tag, parts in definition.locales.items()},
            created_at=created_at,
            updated_at=updated_at,
        )


class TemplateSummary(BaseModel):
    key: str
    version: int
    builtin: bool
    description: str | None
    default_locale: str
    locales: list[str] = Field(description="the locale tags (GET the template for its parts)")
    updated_at: AwareDatetime | None


class TemplatePage(BaseModel):
    items: list[TemplateSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class PreviewNotification(BaseModel):
    """``notification`` as the template sees it."""

    model_config = ConfigDict(extra="forbid")
    notification_type: NotificationType = NotificationType.INFO
    priority: Priority = Priority.NORMAL
    action_url: HttpUrlStr | None = None


class TemplatePreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: JsonObject = Field(default_factory=dict, description="``data``: at most 64 KiB of JSON")
    locale: LocaleTag | None = Field(
        default=None, description="render in this locale (else the user's), with fallbacks"
    )
    user_id: Identifier | None = Field(
        default=None, description="render for this recipient: their locale and time zone"
    )
    notification: PreviewNotification = Field(default_factory=PreviewNotification)
    task: JsonObject | None = Field(
        default=None, description="``task``, for the built-in task templates"
    )


class PreviewParts(BaseModel):
    title: str
    message: str
    email_subject: str
    email_html: str | None = Field(description="null: the email channel's default layout")
    sms: str
    push_title: str
    push_body: str


class SmsSize(BaseModel):
    encoding: Literal["GSM-7", "UCS-2"]
    units: int = Field(description="GSM-7 septets or UCS-2 code units")
    segments: int


class PreviewWarning(BaseModel):
    code: str
    message: str


class TemplatePreview(BaseModel):
    key: str
    version: int
    builtin: bool
    locale: str = Field(description="the template locale rendered (and formatted in)")
    parts: PreviewParts = Field(description="each part as its channel would send it")
    defaulted: list[str] = Field(
        description="parts the template does not have, shown as their channel's fallback"
    )
    sms: SmsSize
    warnings: list[PreviewWarning]
