"""What both Slicer modules share and needs Slicer: images to and from nodes (:mod:`.conversion`), results
built into the scene (:mod:`.scene`), the tag that makes them a module's own outputs (:mod:`.outputs`), work
in ``crossmodal`` child processes (:mod:`.runs`), and the shared Qt panel (:mod:`.panel`, the only part
that needs the application). The engine, :mod:`crossmodal`, never imports this package."""
