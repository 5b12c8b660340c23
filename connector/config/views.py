"""The per-account view of the settings: every per-account default applied once.

Built from the settings by `account_views` (settings know nothing of views); the pipeline and
the service read an account's topic, retsize and poll interval from here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector.config.settings import AccountSettings, Settings


@dataclass(frozen=True)
class AccountView:
    """One account as the pipeline sees it: every per-account default already applied."""

    name: str
    index: int  # position in [[accounts]], for error messages naming the key
    topic: str
    retsize: int
    poll_interval: float
    account: AccountSettings  # the credential source; read when the account starts


def account_views(settings: Settings) -> tuple[AccountView, ...]:
    """Each account with its defaults resolved, in `[[accounts]]` order."""
    return tuple(account_view(settings, index) for index in range(len(settings.accounts)))


def account_view(settings: Settings, index: int) -> AccountView:
    account, platform = settings.accounts[index], settings.platform
    return AccountView(
        name=account.name,
        index=index,
        topic=account.topic or settings.kafka.topic,
        retsize=account.retsize or platform.retsize,
        poll_interval=platform.poll_interval
        if account.poll_interval is None
        else account.poll_interval,
        account=account,
    )
