"""The only writers of records. Shared by the API and the scheduler; every run change goes through the state
machine inside a compare-and-set (``RecordStore.mutate``)."""
