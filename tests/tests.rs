mod textmark;
