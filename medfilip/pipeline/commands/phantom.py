"""``medfilip phantom-gallery``: the renderer's contact sheet."""

from __future__ import annotations

import argparse
from pathlib import Path

from medfilip.pipeline.config import PipelineConfig


def cmd_phantom_gallery(args: argparse.Namespace, cfg: PipelineConfig) -> int:
    from medfilip.phantom.gallery import gallery_categories, render_gallery

    categories = args.categories or gallery_categories()
    out = render_gallery(args.out, size=args.size, seed=args.seed, categories=categories, settings=cfg.phantom)
    print(f"{out}: {len(categories)} categories at mild and severe, {args.size} px")
    return 0


def register(sub) -> None:
    s = sub.add_parser("phantom-gallery", help="contact sheet of the phantom renderer (each category mild vs severe)")
    s.add_argument("--out", type=Path, required=True, help="PNG to write")
    s.add_argument("--size", type=int, default=160, help="pixels per image (default 160)")
    s.add_argument("--seed", type=int, default=7, help="patient seed shared by every tile")
    s.add_argument("--categories", nargs="+", default=None, help="only these categories (default: all, normal first)")
    s.set_defaults(func=cmd_phantom_gallery)
