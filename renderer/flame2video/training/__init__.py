"""Training FLAME2Video: data, the paper's three phases, few-step distillation, export.

Modules: ``layout`` (the dataset folder: manifest, per-clip videos and FLAME sequence),
``checks`` (every clip checked up front), ``build`` (datasets from multi-view or ordinary
talking-head videos plus FLAME sequence files), ``synthetic`` (a multi-view dataset drawn by
flamecast's own head and rasterizer with real photographs as texture), ``data`` (the torch
Dataset: reference frame, window of W frames, V views, augmentation, FLAME renderings drawn by
the function serving conditions with), ``models`` (the network in training form, the
parameters each phase trains, export to flamecast's weights layout), ``distill`` (latent
consistency distillation), ``trainer`` (the accelerate loop), ``validate`` (sampled videos and
PSNR on held-out clips), ``commands`` (``flamecast train flame2video``, ``flamecast data
flame2video``). Nothing heavy is imported with this package.
"""
