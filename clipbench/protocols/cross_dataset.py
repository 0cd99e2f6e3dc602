"""Cross-dataset transfer (spec §5.3): the source's model scored on other datasets with their own classes."""

from __future__ import annotations

from clipbench.protocols.transfer import Transfer


class CrossDataset(Transfer):
    title = "Cross-dataset transfer (top-1 %; source accuracy beside the average over the targets)"
    average_label = "target average"

    def published_average(self) -> frozenset[str]:
        from clipbench.reference import CLASSIFICATION, TRANSFER_SOURCE

        return frozenset(CLASSIFICATION) - {TRANSFER_SOURCE}
