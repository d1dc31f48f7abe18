"""Write the _xz/_zy projections of pseudo labels: ``python generate_mutliview_pseudo.py RAW_DATA_DIR``.

External volumes (train_ext/<name>/labels/*.png, images jp2) get their image and label projections;
train kidneys labelled by ``generate_pseudo.py --split train`` (train/<kidney>/pseudo_labels) get
``train/<kidney>_xz/pseudo_labels`` and ``_zy/pseudo_labels`` beside the projections of
generate_mutliview.py (run that first). Complete outputs are skipped, unless the pseudo labels were
rewritten by other models since (their record `<labels>_source.json` differs from the copy in the projection).
"""

from pathlib import Path

from generate_mutliview import parse_args
from src.data.multiview import project_split, project_train_pseudo
from src.data.registry import Registry
from src.data.volumes import VolumeStore
from src.utils.errors import UserError, cli_main

SPLITS = ("external",)


@cli_main
def main(argv=None):
    args = parse_args(argv, __doc__)
    data = Path(args.data_dir)
    if not data.is_dir():
        raise UserError(f"{data}: data directory not found (RAW_DATA_DIR)")
    registry = Registry.load()
    store = VolumeStore(args.cache_dir, workers=args.workers, progress=not args.quiet)
    options = dict(force=args.force, block_bytes=args.block_mb * 2**20 or None, workers=args.workers, progress=not args.quiet)
    done = {}
    external = [g for g in registry.base_groups("external") if g.projections and g.is_present(data, need_labels=True)]
    if external:
        done.update(project_split(data, SPLITS, registry=registry, store=store, **options))
    train = project_train_pseudo(data, registry=registry, store=store, **options)
    done.update({f"{k}:pseudo_labels": v for k, v in train.items()})
    if not done:
        looked = ", ".join(g.labels or g.name for g in registry.base_groups("external"))
        raise UserError(f"{data}: no pseudo labels to project (looked for {looked} and train/<kidney>/pseudo_labels)")
    return done


if __name__ == "__main__":
    main()
