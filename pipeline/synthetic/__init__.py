"""The embedded default subject: synthetic fMRI on fsaverage5 with a known, planted answer.

``geometry`` (region and ROIs) -> ``planting`` (the answer) -> ``responses`` (from a
feature store) -> ``layout`` (Algonauts 2023 folder + planted truth); ``generate`` runs
the chain for one subject, ``bddn synth`` for several.
"""
