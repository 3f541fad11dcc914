"""Segmentation (paper Table IV): UNets with each run's pretrained image encoder vs a random-init
encoder, fine-tuned on 1 / 10 / 100 % of the SIIM-ACR train split, Dice and IoU on test.

Modules: ``settings`` (config section), ``metrics`` (Dice / IoU, both Dice definitions),
``data`` (images and masks of a SIIM store, fraction subsets), ``unet`` (smp UNet and the
encoder weight mapping), ``finetune`` (training, choices on validate, test scores), ``table``
(the Table IV CSV with bootstrap intervals and the figure), ``cli`` and ``workflow``.
"""
