-- migrate:up
CREATE TRIGGER video_tasks_announced AFTER INSERT ON scheduling.video_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION platform.announce_work();

-- migrate:down
DROP TRIGGER video_tasks_announced ON scheduling.video_tasks;
