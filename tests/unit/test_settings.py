"""service.settings: the URLs an operator gives are refused at start-up when they cannot work."""

from __future__ import annotations

import pydantic
import pytest

from service.settings import Settings


@pytest.mark.parametrize("field", ["push_api_url", "public_base_url"])
@pytest.mark.parametrize("value", ["push.example.com", "https://", "ftp://push.example.com", "https://h/?a=1"])
def test_a_url_that_is_not_http_with_a_host_is_refused(field: str, value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"{field}\n.*must be an http\\(s\\) URL"):
        Settings(**{field: value})


def test_a_url_is_kept_without_its_trailing_slash_and_empty_means_unset() -> None:
    assert Settings(push_api_url="https://push.example.com:8443/").push_api_url == "https://push.example.com:8443"
    assert Settings(push_api_url="").push_api_url is None


@pytest.mark.parametrize("field", ["push_api_url", "public_base_url"])
def test_a_url_that_is_not_ascii_is_refused_with_the_form_to_use(field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=f"{field}\n.*must be ASCII: a host in its punycode form"):
        Settings(**{field: "https://pûsh.example.com"})
