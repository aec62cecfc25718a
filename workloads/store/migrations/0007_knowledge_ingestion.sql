-- What the ingestion worker (xin-ingest) keeps per chunk: a digest of everything it writes
-- (an unchanged chunk is not rewritten and keeps its embedding), the model the embedding came
-- from (another model's vectors are replaced), metadata (JSONL fields), and the IngestionJob
-- that last changed it.
ALTER TABLE knowledge_chunks
    ADD COLUMN content_hash    TEXT,
    ADD COLUMN embedding_model TEXT,
    ADD COLUMN metadata        JSONB NOT NULL DEFAULT '{}',
    ADD COLUMN ingestion_job   TEXT;
