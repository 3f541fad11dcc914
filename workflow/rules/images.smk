# Stage: images (rules are added by the stage's owner; see workflow/Snakefile for the order).
