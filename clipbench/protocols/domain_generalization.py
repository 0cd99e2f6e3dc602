"""Domain generalization (spec §5.4): the source's model scored on domain-shifted test sets of its classes."""

from __future__ import annotations

from clipbench.protocols.transfer import Transfer


class DomainGeneralization(Transfer):
    title = "Domain generalization (top-1 %; source accuracy beside the OOD average over the targets)"
    average_label = "OOD average"

    def published_average(self) -> frozenset[str]:
        from clipbench.reference import IMAGENET_FAMILY, TRANSFER_SOURCE

        return frozenset(IMAGENET_FAMILY) - {TRANSFER_SOURCE}
