"""After promotion: what follows the champion. Batch embeddings of a corpus (`encode`), a search index over them
served behind an alias that moves only after a recall check (`index`), drift of the texts a model meets
(`monitor`), and the watcher that notices a new data version (`data_watch`). The flows in flows/ wire these to
Prefect's events and triggers; nothing here imports Prefect."""
