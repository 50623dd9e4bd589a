"""Files in and out: volumes and their geometry (``volume``), written results (``outputs``) and the rule that no
output ever resolves to an input, the model or another output (``paths``)."""
