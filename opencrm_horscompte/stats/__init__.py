"""Statistics for the functional administrator: daily counters (:mod:`.counters`), their
aggregation per day or week (:mod:`.report`), the SVG chart (:mod:`.chart`) and the page
with its CSV download (:mod:`.page`). No personal data is counted."""
