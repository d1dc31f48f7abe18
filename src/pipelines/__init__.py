"""End-to-end pipelines on the phantom: the demo (``make demo``) and the robustness table (``make eval-robustness``)."""
