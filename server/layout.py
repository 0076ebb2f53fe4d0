"""How ``serve --num-gpus N`` uses N GPUs for a family that cannot split one request over them.

SGLang serves any model on ``--num-gpus N``. sgld splits a request's sequence (Ulysses, ring) or its CFG branches
over ranks; a family with neither (Z-Image: no sequence-parallel plan, guidance that runs as one branch by
default; HunyuanVideo: distilled guidance) would have nothing to split. Given ``--num-gpus N`` alone (no
parallel degree, no ``--dp-size``), such a server runs N data-parallel engine workers of one GPU each instead:
every GPU serves, requests in parallel. It is logged; an explicit degree is still refused with the reason.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from sgld.config.schema import RunConfig
from sgld.families import FamilySpec, GuidanceKind
from sgld.models.folder_model import FolderModel

log = logging.getLogger("sgld.server")

# Options that choose how a request is split over the GPUs: given any, the layout is the user's.
LAYOUT_OPTIONS = ("sp_size", "ulysses_degree", "ring_degree", "enable_cfg_parallel", "dp_size", "tp_size")
# Guidance that runs as one DiT branch (by default): nothing for CFG parallelism to split.
ONE_BRANCH = (GuidanceKind.embedded, GuidanceKind.cfg_extra)


def nothing_to_split(spec: FamilySpec) -> bool:
    """Whether one request of this family cannot use several GPUs: no sequence-parallel plan, one guidance branch."""
    return not spec.sequence_parallel and spec.guidance in ONE_BRANCH


def data_parallel_options(options: Mapping[str, Any], run: RunConfig) -> Optional[dict[str, Any]]:
    """``options`` with ``dp_size = num_gpus`` when ``run`` gives N GPUs alone to a family with nothing to split
    (logged); None when the layout stays as given."""
    gpus = run.parallel.num_gpus
    if gpus <= 1 or any(options.get(name) not in (None, False, 1) for name in LAYOUT_OPTIONS):
        return None
    spec = FolderModel.of(run.model.path, run.model.download).spec
    if not nothing_to_split(spec):
        return None
    log.info("--num-gpus %d: %s models have no sequence-parallel split and no CFG branches to split; serving them "
             "as %d data-parallel engine workers of one GPU each (--dp-size %d)", gpus, spec.name, gpus, gpus)
    return {**options, "dp_size": gpus}
