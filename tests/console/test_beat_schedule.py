from console.celery import app


def test_every_scheduled_task_exists():
    app.loader.import_default_modules()
    for entry in app.conf.beat_schedule.values():
        assert entry["task"] in app.tasks, f"beat schedules {entry['task']}, which no module defines"
