-- Who said an assignment holds (issue 9): 'contract' (the operator's assignments
-- file), or the collector that guessed it ('nvml' from agents' process cgroups, a
-- prometheus/scrape source from pod labels). A daemon that starts closes what the
-- collectors guessed before it stopped: they re-open it from their next reports,
-- instead of the old rows staying open beside the new ones (GPUs counted twice).
ALTER TABLE assignments ADD COLUMN source VARCHAR;
