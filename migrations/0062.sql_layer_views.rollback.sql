alter table sql_layer_files drop column views;
