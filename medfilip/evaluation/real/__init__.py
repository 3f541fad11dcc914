"""The real radiographs of the cxr_real pack beside their phantom twins (issue 21).

- :mod:`.gap` measures how far phantom images are from real ones (intensity histogram, radial power
  spectrum, lung-field and heart proportions from lung masks) and draws the side-by-side figure;
- :mod:`.tables` evaluates every run on the real stores and the twins (zero-shot with intervals,
  the linear probe with a random-initialised encoder beside the pretrained ones, class-text retrieval);
- :mod:`.notes` sends the ieee8023 clinical notes through the extraction stage and sets the entities
  against the metadata's finding.

docs/real-images.md has the tables and the reading.
"""
