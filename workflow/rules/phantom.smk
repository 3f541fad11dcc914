# Stage: phantom (rules are added by the stage's owner; see workflow/Snakefile for the order).
