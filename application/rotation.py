"""Master-key rotation: re-wrap the service's copies of data keys under the active key,
in the current format (under the wrapping key derived from it, bound to the message they
protect); wraps of older formats are rewritten too.

Content is never re-encrypted: a data key stays the same, only the wrapping around
the service's copy of it changes. Recipients' RSA-wrapped copies do not involve the
master keys at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from application.ports import SERVICE_KEY, Keyring, KeyUnwrapError, KeyVault, message_key_context

BATCH = 500


@dataclass
class RotationReport:
    """What a rotation did. ``not_held`` and ``damaged`` count, by master key id, the
    data keys it could not unwrap: they stay as they were."""

    active_key_id: str
    rewrapped: int = 0
    changed_meanwhile: int = 0
    not_held: Counter[str] = field(default_factory=Counter)
    damaged: Counter[str] = field(default_factory=Counter)

    @property
    def complete(self) -> bool:
        return not self.not_held and not self.damaged


class KeyRotation:
    """Moves every service-held data key to the keyring's active master key, in the
    bound format."""

    def __init__(self, keyring: Keyring, vault: KeyVault) -> None:
        self.keyring = keyring
        self.vault = vault

    def counts(self) -> dict[str, int]:
        """Service-held data keys by the master key id they are wrapped under."""
        return self.vault.count_by_key_id(SERVICE_KEY)

    def outdated(self) -> int:
        """Service-held data keys still wrapped in an older format: bound to no message,
        or wrapped with a master key itself rather than a key derived from it."""
        return self.vault.count_outdated(SERVICE_KEY, self.keyring.wrap_format)

    def pending(self) -> int:
        """Data keys ``run`` would rewrite: under an older key, or in an older format."""
        active = self.keyring.active_key_id
        return self.vault.count_to_rewrap(SERVICE_KEY, active, self.keyring.wrap_format)

    def run(
        self, batch_size: int = BATCH, progress: Callable[[int], None] | None = None
    ) -> RotationReport:
        """Re-wrap, batch by batch; ``progress(n)`` after each batch of ``n`` entries.

        Safe to run while the service runs and to run again: an entry shredded or
        re-wrapped by someone else meanwhile is left as it is.
        """
        active = self.keyring.active_key_id
        current = self.keyring.wrap_format
        report = RotationReport(active)
        after: tuple[str, str] | None = None
        while True:
            batch = self.vault.entries_to_rewrap(SERVICE_KEY, active, current, after, batch_size)
            if not batch:
                return report
            for entry in batch:
                if not self.keyring.holds(entry.key_id):
                    report.not_held[entry.key_id] += 1
                    continue
                context = message_key_context(entry.message_id, entry.holder)
                try:
                    data_key = self.keyring.unwrap(entry.key_id, entry.wrapped_key, context)
                except KeyUnwrapError:
                    report.damaged[entry.key_id] += 1
                    continue
                key_id, wrapped = self.keyring.wrap(data_key, context)
                if self.vault.rewrap(entry, key_id, wrapped):
                    report.rewrapped += 1
                else:
                    report.changed_meanwhile += 1
            after = (str(batch[-1].message_id), batch[-1].holder)
            if progress is not None:
                progress(len(batch))
