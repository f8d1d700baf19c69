"""The RSI loop: analyse failures, propose bounded changes, screen, build, gate, promote.

``analyse`` groups the train split's wrong answers by cue word and by the expert that would
have ranked the gold answer first; ``propose`` turns those groups into routing rules and
searches numeric changes within the safety policy's ``max_relative_step``; ``executor`` builds
and measures candidates on a local process pool or on Ray; ``loop`` runs the iterations
through the real gate (:func:`runtime.promote.promote`); ``manifest`` records each run;
``report`` writes the static HTML page.
"""
