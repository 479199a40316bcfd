"""``dfml serve``'s parts: plain-Python request checks, task board and model views
(testable without Ray), and the thin Ray Serve shell around them (:mod:`.app`)."""
