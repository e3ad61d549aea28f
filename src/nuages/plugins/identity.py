"""Who the caller is and where their data lives: auth policies, accounts, default bucket.

Installs, from the settings, the authentication policies in the order of setting ``auth``
(the first that identifies a request wins, protocol/06 §1), the ``accounts`` plugin and the
``default_bucket`` plugin. See docs/accounts.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nuages.web.auth import Authenticator, AuthPolicy, BasicAuthPolicy

if TYPE_CHECKING:
    from nuages.web.dispatch import Dispatcher

__all__ = ["install"]


def install(dispatcher: Dispatcher) -> None:
    settings = dispatcher.settings
    policies: list[AuthPolicy] = []
    for name in settings.auth:
        if name == "basicauth":
            policies.append(BasicAuthPolicy(settings.userid_hmac_secret))
        elif name == "accounts":
            from nuages.plugins.accounts import install_policy

            policies.append(install_policy(dispatcher))
        elif name == "openid":
            from nuages.plugins import openid

            policies.extend(openid.install_policies(dispatcher))
    dispatcher.authenticator = Authenticator(policies)
    if "accounts" in settings.plugins:
        from nuages.plugins import accounts

        accounts.install(dispatcher)
    if "default_bucket" in settings.plugins:
        from nuages.plugins import default_bucket, serves_buckets

        if serves_buckets(dispatcher):
            default_bucket.install(dispatcher)
