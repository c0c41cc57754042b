"""Kubernetes' syntax rules for names, labels, annotations and selectors.

The rules and messages follow k8s.io/apimachinery's ``validation`` package,
which CKE calls; each function returns the list of problems (empty = valid).
"""

from __future__ import annotations

import re
from typing import Final

_NAME_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN_RE: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1035_LABEL_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

NAME_MAX: Final = 63
SUBDOMAIN_MAX: Final = 253
ANNOTATIONS_MAX_BYTES: Final = 256 * 1024
SELECTOR_OPERATORS: Final = ("In", "NotIn", "Exists", "DoesNotExist")


def qualified_name(value: str) -> list[str]:
    """``[prefix/]name``: a DNS subdomain prefix and a name of at most 63 characters."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return ["prefix part must be non-empty"]
        problems = [f"prefix part {m}" for m in dns1123_subdomain(prefix)]
        if problems:
            return problems
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        return ["name part must be non-empty"]
    if len(name) > NAME_MAX:
        return [f"name part must be no more than {NAME_MAX} characters"]
    if not _NAME_RE.match(name):
        return [
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        ]
    return []


def label_value(value: str) -> list[str]:
    if len(value) > NAME_MAX:
        return [f"must be no more than {NAME_MAX} characters"]
    if not _LABEL_VALUE_RE.match(value):
        return [
            "a label value must be empty or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character"
        ]
    return []


def dns1123_subdomain(value: str) -> list[str]:
    if len(value) > SUBDOMAIN_MAX:
        return [f"must be no more than {SUBDOMAIN_MAX} characters"]
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        return [
            "must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, "
            "'-' or '.', starting and ending with an alphanumeric character"
        ]
    return []


def dns1123_label(value: str) -> list[str]:
    if len(value) > NAME_MAX:
        return [f"must be no more than {NAME_MAX} characters"]
    if not _DNS1123_LABEL_RE.match(value):
        return [
            "must be a lowercase RFC 1123 label: lowercase alphanumeric characters or '-', "
            "starting and ending with an alphanumeric character"
        ]
    return []


def dns1035_label(value: str) -> list[str]:
    if len(value) > NAME_MAX:
        return [f"must be no more than {NAME_MAX} characters"]
    if not _DNS1035_LABEL_RE.match(value):
        return [
            "must be a lowercase RFC 1035 label: lowercase alphanumeric characters or '-', "
            "starting with a letter and ending with an alphanumeric character"
        ]
    return []


def annotation_key(value: str) -> list[str]:
    """Annotation keys are qualified names, compared case-insensitively."""
    return qualified_name(value.lower())
